"""The VQGAN tokenizer (LVM-compatible). Arrives with the tokenizer issue."""
