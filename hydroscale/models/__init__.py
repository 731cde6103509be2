"""models (see DESIGN §2)."""
