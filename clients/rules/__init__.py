"""Client rules: every module here registers one with :mod:`fedhyper.client_rules`."""
