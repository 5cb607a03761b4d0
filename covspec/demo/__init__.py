"""covspec.demo"""
