"""Stage 4, images: download with img2dataset (`download`), image filters, the content-addressed image store (`store`).
"""
