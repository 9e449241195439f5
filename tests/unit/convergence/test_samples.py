"""jobStats dicts to typed samples."""

import testtools

from nova_livemig_ext.convergence import samples as s

RUNNING = {
    'type': 2, 'operation': 5, 'time_elapsed': 10064, 'downtime': 300,
    'setup_time': 1, 'data_total': 335937536, 'data_processed': 142140098,
    'data_remaining': 181190656, 'memory_total': 335937536,
    'memory_processed': 142140098, 'memory_remaining': 181190656,
    'memory_bps': 14401636, 'memory_dirty_rate': 1004,
    'memory_iteration': 3, 'memory_postcopy_requests': 0,
    'memory_page_size': 4096, 'auto_converge_throttle': 30,
    'disk_total': 0, 'disk_processed': 0, 'disk_remaining': 0,
}


class TestSampleFromJobStats(testtools.TestCase):

    def test_running_job_every_field(self):
        sample = s.sample_from_job_stats(RUNNING)
        self.assertEqual(s.JobSample(
            job_type=s.JobType.UNBOUNDED, elapsed_s=10.064,
            data_total_bytes=335937536, data_processed_bytes=142140098,
            data_remaining_bytes=181190656, memory_total_bytes=335937536,
            memory_processed_bytes=142140098,
            memory_remaining_bytes=181190656,
            memory_bandwidth_bytes_s=14401636.0,
            dirty_rate_bytes_s=1004 * 4096.0, page_size_bytes=4096,
            iteration=3, downtime_ms=300.0, setup_time_ms=1.0,
            auto_converge_throttle_pct=30, postcopy_requests=0),
            sample)
        self.assertTrue(sample.is_active)
        self.assertFalse(sample.is_finished)

    # (name, stats, field, expected)
    CASES = [
        ('empty dict is no job', {}, 'job_type', s.JobType.NONE),
        ('unknown type is no job', {'type': 42}, 'job_type', s.JobType.NONE),
        ('completed', {'type': 3}, 'job_type', s.JobType.COMPLETED),
        ('missing elapsed', {'type': 2}, 'elapsed_s', None),
        ('missing counters are zero', {'type': 2}, 'memory_remaining_bytes',
         0),
        ('negative counter is zero', {'type': 2, 'memory_remaining': -5},
         'memory_remaining_bytes', 0),
        ('missing dirty rate is unknown', {'type': 2}, 'dirty_rate_bytes_s',
         None),
        ('missing page size defaults to 4 KiB',
         {'type': 2, 'memory_dirty_rate': 10}, 'dirty_rate_bytes_s',
         40960.0),
        ('huge pages', {'type': 2, 'memory_dirty_rate': 10,
                        'memory_page_size': 2097152},
         'dirty_rate_bytes_s', 20971520.0),
        ('zero page size falls back', {'type': 2, 'memory_page_size': 0},
         'page_size_bytes', 4096),
        ('missing iteration is unknown', {'type': 2}, 'iteration', None),
        ('missing throttle is unknown', {'type': 2},
         'auto_converge_throttle_pct', None),
        ('a bool is not a number', {'type': 2, 'memory_iteration': True},
         'iteration', None),
        ('a string is not a number', {'type': 2, 'downtime': '300'},
         'downtime_ms', None),
        ('error message', {'type': 4, 'errmsg': 'boom'}, 'error_message',
         'boom'),
        ('completed downtime', {'type': 3, 'downtime': 366},
         'downtime_ms', 366.0),
    ]

    def test_tolerates_missing_and_odd_fields(self):
        for name, stats, field, expected in self.CASES:
            sample = s.sample_from_job_stats(stats)
            self.assertEqual(expected, getattr(sample, field), name)

    def test_activity_by_type(self):
        for job_type, active, finished in [
                (s.JobType.NONE, False, False),
                (s.JobType.BOUNDED, True, False),
                (s.JobType.UNBOUNDED, True, False),
                (s.JobType.COMPLETED, False, True),
                (s.JobType.FAILED, False, True),
                (s.JobType.CANCELLED, False, True)]:
            sample = s.sample_from_job_stats({'type': int(job_type)})
            self.assertEqual((active, finished),
                             (sample.is_active, sample.is_finished),
                             job_type)

    def test_key_names_match_libvirt(self):
        libvirt = self._libvirt_or_skip()
        for name, key in [
                ('VIR_DOMAIN_JOB_TIME_ELAPSED', s.KEY_TIME_ELAPSED_MS),
                ('VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE', s.KEY_MEMORY_DIRTY_RATE),
                ('VIR_DOMAIN_JOB_MEMORY_ITERATION', s.KEY_MEMORY_ITERATION),
                ('VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE', s.KEY_MEMORY_PAGE_SIZE),
                ('VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS',
                 s.KEY_MEMORY_POSTCOPY_REQS),
                ('VIR_DOMAIN_JOB_MEMORY_REMAINING', s.KEY_MEMORY_REMAINING),
                ('VIR_DOMAIN_JOB_MEMORY_PROCESSED', s.KEY_MEMORY_PROCESSED),
                ('VIR_DOMAIN_JOB_MEMORY_TOTAL', s.KEY_MEMORY_TOTAL),
                ('VIR_DOMAIN_JOB_MEMORY_BPS', s.KEY_MEMORY_BPS),
                ('VIR_DOMAIN_JOB_DOWNTIME', s.KEY_DOWNTIME_MS),
                ('VIR_DOMAIN_JOB_SETUP_TIME', s.KEY_SETUP_TIME_MS),
                ('VIR_DOMAIN_JOB_AUTO_CONVERGE_THROTTLE',
                 s.KEY_AUTO_CONVERGE_THROTTLE),
                ('VIR_DOMAIN_JOB_DATA_REMAINING', s.KEY_DATA_REMAINING),
                ('VIR_DOMAIN_JOB_ERRMSG', s.KEY_ERRMSG)]:
            self.assertEqual(getattr(libvirt, name), key, name)
        for job_type in s.JobType:
            self.assertEqual(
                getattr(libvirt, 'VIR_DOMAIN_JOB_' + job_type.name),
                int(job_type))

    def _libvirt_or_skip(self):
        try:
            import libvirt
        except ImportError:
            self.skipTest('libvirt-python is not installed')
        return libvirt
