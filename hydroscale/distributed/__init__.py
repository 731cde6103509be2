"""distributed (see DESIGN §2)."""
