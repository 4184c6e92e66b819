/** The resync progress view, rendered by ink into a test frame. */
import { render } from 'ink-testing-library';
import t from 'tap';
import { formatEta, ResyncView } from '../src/cli/ui/ResyncView.tsx';
import type { ResyncProgress } from '../src/ops/resync.ts';

const progress = (over: Partial<ResyncProgress>): ResyncProgress => ({
  runId: '7',
  total: 1000,
  enqueued: 1000,
  delivered: 250,
  failed: 0,
  waiting: 0,
  blocked: 0,
  queued: 750,
  rate: 125,
  elapsedMs: 2000,
  enqueueDone: true,
  ...over,
});

t.test('a bar, the counts, the rate and the ETA', async (t) => {
  const { lastFrame, rerender, unmount } = render(<ResyncView progress={progress({})} width={20} />);
  const frame = lastFrame() ?? '';
  t.match(frame, /█{5}░{15} 25% \(250\/1000\)/);
  t.match(frame, /enqueued 1000 · delivered 250 · failed 0 · waiting 0/);
  t.match(frame, /125 users\/s · ETA 6s · run 7/);
  rerender(
    <ResyncView
      progress={progress({
        enqueued: 400,
        enqueueDone: false,
        delivered: 1000,
        failed: 3,
        waiting: 2,
        blocked: 1,
        rate: 0,
      })}
      width={20}
    />,
  );
  const later = lastFrame() ?? '';
  t.match(later, /enqueued 400… · delivered 1000 · failed 3 · waiting 3/);
  t.match(later, /ETA —/, 'no rate yet: no ETA');
  unmount();
});

t.test('ETA wording', async (t) => {
  t.equal(formatEta(5.2), '6s');
  t.equal(formatEta(125), '2m 5s');
  t.equal(formatEta(7260), '2h 1m');
  t.equal(formatEta(Number.NaN), '—');
});
