#!/usr/bin/env python3
"""A command-line tool for the command connection tests: it does what its first argument says."""
import os
import subprocess
import sys
import time

command = sys.argv[1] if len(sys.argv) > 1 else "show"
rest = sys.argv[2:]

if command == "show":
    # What the tool was given: its arguments and the credentials the gateway injected.
    print("args:", " ".join(rest))
    print("token:", os.environ.get("TOOL_TOKEN", "(none)"))
    with open(os.environ["TOOL_KEY_FILE"]) as f:
        print("key file:", f.read().strip())
    print("home:", os.environ.get("HOME", "(unset)"))
    print("contact: jane.doe@example.com, ssn 123-45-6789", file=sys.stderr)
elif command == "echo":
    sys.stdout.write(sys.stdin.read().upper())
elif command == "spawn":
    # A child that would outlive the tool, and a marker it writes later.
    subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(2.5); open({rest[0]!r}, 'w').write('alive')"])
    time.sleep(60)
elif command == "flood":
    sys.stdout.write("x" * 1_000_000)
elif command == "slow":
    # Output in pieces, a credential and an email split across two of them.
    token = os.environ.get("TOOL_TOKEN", "")
    for piece in ["first line\n", "token " + token[:5], token[5:] + "\n", "mail jane.", "doe@example.com\n"]:
        sys.stdout.write(piece)
        sys.stdout.flush()
        time.sleep(0.15)
elif command == "fail":
    print("something went wrong", file=sys.stderr)
    sys.exit(3)
else:
    print(f"{command}: done")
