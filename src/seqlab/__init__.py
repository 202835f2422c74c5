"""seqlab: neural sequence models with their own recurrence engine."""

__version__ = "0.1.0"
