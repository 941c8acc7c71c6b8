"""tests/py_junit.py — runs a unittest TestCase class for the Python tests, prints
"N passed, N failed, N skipped" and writes a JUnit XML file to $XML_OUTPUT_FILE when set
(one <testcase> per test), which tools/count_tests.py counts."""
import os
import sys
import unittest
import xml.etree.ElementTree as ET


class _XmlResult(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.cases = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.cases.append((test.id(), None))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.cases.append((test.id(), ("failure", self._exc_info_to_string(err, test))))

    def addError(self, test, err):
        super().addError(test, err)
        self.cases.append((test.id(), ("error", self._exc_info_to_string(err, test))))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.cases.append((test.id(), ("skipped", reason)))


def main(case_class, suite_name, framework):
    """A test script's main: prints the interpreter's, ``framework``'s ("torch" or
    "numpy") and safetensors' versions, points shardload at the library in argv[1] and
    runs ``case_class`` (run)."""
    import importlib
    versions = ["python " + sys.version.split()[0]]
    for name in (framework, "safetensors"):
        try:
            versions.append("%s %s" % (name, importlib.import_module(name).__version__))
        except ImportError:  # the reference is optional
            versions.append("%s (not installed)" % name)
    print(", ".join(versions), flush=True)
    import shardload
    shardload.set_library_path(os.path.abspath(sys.argv[1]))
    run(case_class, suite_name)


def run(case_class, suite_name):
    """Runs every test of ``case_class``; exits 0 when all passed (or skipped), else 1."""
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case_class)
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_XmlResult)
    result = runner.run(suite)
    out = os.environ.get("XML_OUTPUT_FILE")
    if out:
        suites = ET.Element("testsuites")
        s = ET.SubElement(suites, "testsuite", name=suite_name, tests=str(len(result.cases)),
                          failures=str(len(result.failures)), errors=str(len(result.errors)))
        for name, outcome in result.cases:
            case = ET.SubElement(s, "testcase", name=name, classname=case_class.__name__)
            if outcome is not None:
                ET.SubElement(case, outcome[0], message=outcome[1][:200]).text = outcome[1]
        ET.ElementTree(suites).write(out)
    passed = len(result.cases) - len(result.failures) - len(result.errors) - len(result.skipped)
    print("%d passed, %d failed, %d skipped" % (passed, len(result.failures) + len(result.errors),
                                                len(result.skipped)))
    sys.exit(0 if result.wasSuccessful() else 1)
