"""What every benchmark shares: the report, statistics, process accounting, packet capture, worker processes."""
