"""covspec.reduce"""
