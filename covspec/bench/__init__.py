"""covspec.bench"""
