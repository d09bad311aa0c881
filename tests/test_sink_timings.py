"""The sink's latency and stage-time percentiles: computed from the most recent samples only, held in
memory of one size from the start (a camera watched for months must not grow the sink)."""
import numpy as np

from stages.sink import RecentSamples


def test_percentiles_come_from_the_most_recent_samples_once_the_buffer_wraps():
    samples = RecentSamples(size=5)
    assert samples.percentile(50) is None and len(samples) == 0
    for value in range(1, 4):
        samples.add(float(value))
    assert len(samples) == 3 and samples.percentile(50) == 2.0
    for value in range(4, 13):
        samples.add(float(value))
    assert len(samples) == 5
    assert samples.percentile(50) == 10.0  # the median of 8..12, the last five
    assert samples.percentile(0) == 8.0 and samples.percentile(100) == 12.0


def test_the_samples_memory_is_taken_whole_at_creation():
    samples = RecentSamples(size=1000)
    before = samples.values.nbytes, samples.values.ctypes.data
    for value in np.linspace(0, 1, 5000):
        samples.add(float(value))
    assert (samples.values.nbytes, samples.values.ctypes.data) == before  # never reallocated
    assert not np.isnan(samples.values).any()
