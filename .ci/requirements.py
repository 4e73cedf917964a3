"""Print the project's requirements (runtime plus the named extras) from pyproject.toml, one a line.

The Makefile installs these into a reusable virtual environment without installing the package
itself, so pyproject.toml stays the single list of dependencies.
"""
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[1:]:
    reqs += project["optional-dependencies"][extra]
print("\n".join(dict.fromkeys(reqs)))
