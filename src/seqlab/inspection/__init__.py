"""Looking inside trained models: probes (traces, ‖∂L/∂h_t‖, saliency) and the inspect page.

:class:`Probe` instruments any model's recurrent layers and cells; :func:`trace_model` runs
a model under one. The HTML report lives in :mod:`seqlab.inspection.report`.
"""

from seqlab.inspection.probe import Probe, Traces, trace_model

__all__ = ["Probe", "Traces", "trace_model"]
