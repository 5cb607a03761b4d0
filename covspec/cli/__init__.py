"""covspec.cli"""
