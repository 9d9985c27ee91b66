"""Stage 2, extract: pages → ordered text/image documents with trafilatura, in DOM order (`pages.ExtractDocuments`)."""
