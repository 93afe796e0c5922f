"""Hosted checkout: EPX Browser Post sessions, callback, expiry and the development demo."""
