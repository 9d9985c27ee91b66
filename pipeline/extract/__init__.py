"""Stage 2, extract: pages → ordered text/image documents with trafilatura, in DOM order (`pages.PageExtractor`,
without Beam; in Beam `transforms.ExtractDocuments`)."""
