"""dfstream monitor: cameras watched for months -- runs per camera, alerts, dashboard, metrics."""
