"""Small, self-contained demonstrations built on the library."""
