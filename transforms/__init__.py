"""Pure functions on numpy arrays: decoding, resize policies, (later) annotation renderers."""
