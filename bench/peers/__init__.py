"""`peers`: the fan-out load against WedSync and the servers a user would pick instead."""
