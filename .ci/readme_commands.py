"""Print the README's two commands (the code block under "The two commands to
start with"), one per line, without their trailing comments."""
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("## The two commands to start with", 1)[1].split("\n## ", 1)[0]
block = re.search(r"\n\n((?:    \S.*\n)+)", section).group(1)
for line in block.splitlines():
    print(re.sub(r"\s+#.*$", "", line.strip()))
