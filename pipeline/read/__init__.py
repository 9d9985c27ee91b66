"""Stage 1, read: WARC/ARC and plain HTML files → pages (`crawl.ReadCrawl`), with damaged-gzip recovery; bytes → text
(`decode`).
"""
