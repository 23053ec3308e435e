"""Speed and memory goals, each measured against a baseline in the same run."""
