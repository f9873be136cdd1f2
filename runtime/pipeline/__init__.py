"""The request pipeline: every priced request runs through this package."""
