"""The LLaMA-style trainer on token shards. Arrives with the trainer issue."""

from .omp_wait import prefer_passive_wait

prefer_passive_wait()  # before any trainer module imports torch: its OpenMP pool reads the env once
