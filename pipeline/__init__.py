"""m3w's Beam pipeline: readers, stage transforms, sinks and the `m3w` command line."""
