"""Generated test data: the deterministic sample crawl (`crawl`) and the local image host on 127.0.0.1 (`imagehost`)."""
