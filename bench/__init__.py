"""`make bench`: throughput and latency of the real services against references measured in the same run."""
