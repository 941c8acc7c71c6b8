#!/usr/bin/env python3
"""Counts test cases in Bazel's JUnit XML files and prints 'N passed, N failed'.

Exit status 1 when any case failed or no test case ran at all."""
import os
import sys
import xml.etree.ElementTree as ET

root = sys.argv[1] if len(sys.argv) > 1 else "bazel-testlogs"
passed = failed = skipped = 0
for dirpath, _, files in os.walk(root, followlinks=True):
    if "test.xml" not in files:
        continue
    try:
        tree = ET.parse(os.path.join(dirpath, "test.xml"))
    except ET.ParseError:
        failed += 1
        continue
    cases = tree.getroot().iter("testcase")
    any_case = False
    for case in cases:
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
        if suite is not None and int(suite.get("failures", 0)) + int(suite.get("errors", 0)) > 0:
            failed += 1
        else:
            passed += 1
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed + skipped == 0 else 0)
