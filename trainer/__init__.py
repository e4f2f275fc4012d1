"""The LLaMA-style trainer on token shards. Arrives with the trainer issue."""
