"""partition (see DESIGN §2)."""
