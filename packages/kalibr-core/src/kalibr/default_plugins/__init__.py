"""Built-in plugins: they use the same hooks as third-party ones."""
