#!/usr/bin/env python3
"""Sales reports over the demo database: a harmless command-line tool that Gatehouse runs as the
`reports` command connection. It reads its database password from REPORT_DB_PASSWORD, which only
the gateway holds; callers never see it. Output goes through the gateway's masks.

    report_tool.py summary               orders by status
    report_tool.py top-customers [N]     the customers who spent most (names, emails)
    report_tool.py customer ID           one customer with their orders
    report_tool.py export                every customer as CSV (the demo policy holds it for approval)
"""
import os
import subprocess
import sys


def sql(query: str, *params: str) -> list[list[str]]:
    environment = {"PGPASSWORD": os.environ["REPORT_DB_PASSWORD"], "PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5"}
    command = ["psql", "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
               "-h", os.environ.get("REPORT_DB_HOST", "127.0.0.1"), "-p", os.environ.get("REPORT_DB_PORT", "5432"),
               "-U", os.environ.get("REPORT_DB_USER", "gh_scram"), "-d", os.environ.get("REPORT_DB_NAME", "app")]
    for index, value in enumerate(params, 1):
        command += ["-v", f"p{index}={value}"]
    done = subprocess.run(command, input=query, capture_output=True, text=True, env=environment, timeout=15)
    if done.returncode != 0:
        sys.exit(f"report_tool: the database said: {done.stderr.strip()}")
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def main(args: list[str]) -> None:
    report = args[0] if args else "summary"
    if report == "summary":
        for status, count, total in sql("SELECT status, count(*), sum(amount) FROM orders GROUP BY status ORDER BY status"):
            print(f"{status:10} {count:>5} orders  {total:>10}")
    elif report == "top-customers":
        limit = args[1] if len(args) > 1 and args[1].isdigit() else "5"
        rows = sql("SELECT c.full_name, c.email, sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id "
                   "GROUP BY c.id ORDER BY 3 DESC LIMIT :'p1'", limit)
        for name, email, total in rows:
            print(f"{name:25} {email:35} {total:>10}")
    elif report == "customer" and len(args) > 1 and args[1].isdigit():
        for name, email, phone, card in sql("SELECT full_name, email, phone, card_number FROM customers WHERE id = :'p1'", args[1]):
            print(f"{name}\n  email {email}\n  phone {phone}\n  card  {card}")
        for order_id, amount, status in sql("SELECT id, amount, status FROM orders WHERE customer_id = :'p1' ORDER BY id", args[1]):
            print(f"  order {order_id}: {amount} ({status})")
    elif report == "export":
        print("id,full_name,email,phone")
        for row in sql("SELECT id, full_name, email, phone FROM customers ORDER BY id"):
            print(",".join(row))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
