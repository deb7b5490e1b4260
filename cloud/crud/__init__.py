"""Data access: every query lives here, takes keyword-only arguments and a `Scope`."""
