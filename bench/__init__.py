"""dfstream benchmarks: throughput, latency and scaling, against the decode->encode limit
and a single-process baseline (``dfstream bench``; see BENCHMARKS.md)."""
