"""Head roles: target sets, sieve scores, Clark-style statistics, hypothesis tests."""
