"""The trainer's commands start torch's OpenMP threads with a short spin: `tokenizer.omp_wait`
(there, so that `python -m tokenizer.fit` and `uvd report`, which may not import the trainer, use
it too)."""

from tokenizer.omp_wait import SHORT_SPIN, USER_WAIT_SETTINGS, prefer_short_spin

__all__ = ["SHORT_SPIN", "USER_WAIT_SETTINGS", "prefer_short_spin"]
