"""The ``waf`` filter: deny rules against attacks in every part of a request."""
