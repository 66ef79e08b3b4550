"""Tongbao (通宝): electronic payment platform back end."""
