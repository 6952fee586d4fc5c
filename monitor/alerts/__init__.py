"""Alert lifecycle: fingerprints, fire, repeat, resolve, muting."""
