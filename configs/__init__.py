"""ml_collections configs, one `get_config(arg)` each; pass a file with --config."""
