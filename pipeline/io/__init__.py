"""Documents between stages: sharded OBELICS Parquet written atomically and read back with counting (`documents`)."""
