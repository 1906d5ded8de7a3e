"""Sources: one module per scheme, each a pure download function over the transfer engine."""
