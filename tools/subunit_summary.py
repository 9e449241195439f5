"""Print "N passed, N failed, N skipped" for one or more subunit v2 files.

stestr prints no such line; CI needs one, summed over every stestr run the
test command makes (the functional tests run once per threading mode).
"""

import sys

import subunit
import testtools


class Counter(testtools.StreamResult):
    def __init__(self):
        super().__init__()
        self.counts = {'success': 0, 'fail': 0, 'skip': 0, 'xfail': 0,
                       'uxsuccess': 0}

    def status(self, test_id=None, test_status=None, **kwargs):
        if test_id and test_status in self.counts:
            self.counts[test_status] += 1


def main(paths):
    counter = Counter()
    for path in paths:
        with open(path, 'rb') as f:
            subunit.ByteStreamToStreamResult(
                f, non_subunit_name='stdout').run(counter)
    c = counter.counts
    passed = c['success'] + c['xfail']
    failed = c['fail'] + c['uxsuccess']
    print('%d passed, %d failed, %d skipped' % (passed, failed, c['skip']))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
