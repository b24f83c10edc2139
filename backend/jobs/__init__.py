"""Jobs: when training runs, and where (a child process, or RQ workers)."""
