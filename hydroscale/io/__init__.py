"""io (see DESIGN §2)."""
