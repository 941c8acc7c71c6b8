#!/usr/bin/env python3
"""Counts test cases in Bazel's JUnit XML files and prints 'N passed, N failed'.

usage: count_tests.py [TESTLOGS] [--save FILE] [--add FILE] [--label NAME]
                     [--exclude PKG/TARGET,...]
  TESTLOGS     a bazel-testlogs folder to count (none: count nothing)
  --exclude    targets not run in this pass (their old logs from another pass are skipped)
  --save FILE  write this folder's counts to FILE and print a summary line for it only
  --add FILE   add the counts saved in FILE, then print the closing line
  --label      a name for this pass in the summary line (e.g. normal, asan)

Exit status 1 when any case failed or no test case ran at all."""
import json
import os
import sys
import xml.etree.ElementTree as ET


def count(root, exclude):
    passed = failed = skipped = 0
    for dirpath, _, files in os.walk(root, followlinks=True):
        if "test.xml" not in files:
            continue
        if os.path.relpath(dirpath, root) in exclude:
            continue
        try:
            tree = ET.parse(os.path.join(dirpath, "test.xml"))
        except ET.ParseError:
            failed += 1
            continue
        any_case = False
        for case in tree.getroot().iter("testcase"):
            any_case = True
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None or case.get("result") == "skipped" \
                    or case.get("status") == "notrun":
                skipped += 1
            else:
                passed += 1
        if not any_case:
            # A target with no cases (a crashed binary or a plain sh_test): count the
            # target itself from its suite attributes.
            suite = tree.getroot().find("testsuite")
            if suite is not None and \
                    int(suite.get("failures", 0)) + int(suite.get("errors", 0)) > 0:
                failed += 1
            else:
                passed += 1
    return {"passed": passed, "failed": failed, "skipped": skipped}


def pass_line(label, c):
    """The per-pass line: '<label> pass: passed=N failed=N skipped=N'."""
    return f"{label} pass: passed={c['passed']} failed={c['failed']} skipped={c['skipped']}"


def line(c):
    text = f"{c['passed']} passed, {c['failed']} failed"
    if c["skipped"]:
        text += f", {c['skipped']} skipped"
    return text


args = sys.argv[1:]
root = save = add = None
label = "tests"
exclude = set()
while args:
    a = args.pop(0)
    if a == "--save":
        save = args.pop(0)
    elif a == "--add":
        add = args.pop(0)
    elif a == "--label":
        label = args.pop(0)
    elif a == "--exclude":
        exclude = set(t for t in args.pop(0).split(",") if t)
    else:
        root = a
c = count(root, exclude) if root else {"passed": 0, "failed": 0, "skipped": 0}
if save:
    with open(save, "w") as f:
        json.dump(c, f)
    print(pass_line(label, c))
    sys.exit(1 if c["failed"] else 0)
if add:
    with open(add) as f:
        prev = json.load(f)
    if root:
        print(pass_line(label, c))
    c = {k: c[k] + prev.get(k, 0) for k in c}
print(line(c))
sys.exit(1 if c["failed"] or c["passed"] + c["skipped"] == 0 else 0)
