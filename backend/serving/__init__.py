"""Serving: the Flask app, its routes and the ML backend service behind them."""
