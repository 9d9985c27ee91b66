"""Data layouts shared by every stage: documents (OBELICS Parquet) and training shards."""
