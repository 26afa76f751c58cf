// SetMap: the reconciler's key → ordered set of strings, one value kept as the string itself.
import { SetMap } from '../../lib/proxy/setmap.js';

test('values keep their insertion order through growing to a set and shrinking back to one', () => {
  const m = new SetMap();
  expect([...m.values('k')]).toEqual([]);
  expect(m.first('k')).toBeUndefined();
  m.add('k', 'a');
  m.add('k', 'a');
  expect([...m.values('k')]).toEqual(['a']);
  m.add('k', 'b');
  m.add('k', 'c');
  m.add('k', 'b');
  expect([...m.values('k')]).toEqual(['a', 'b', 'c']);
  expect(m.delete('k', 'a')).toBe(false);
  expect(m.first('k')).toBe('b');
  expect(m.delete('k', 'x')).toBe(false);
  expect(m.delete('k', 'c')).toBe(false);
  expect([...m.values('k')]).toEqual(['b']);
  m.add('k', 'a');
  expect([...m.values('k')]).toEqual(['b', 'a']);
  expect(m.delete('k', 'b')).toBe(false);
  expect(m.delete('k', 'a')).toBe(true); // emptied: the key is gone
  expect([...m.values('k')]).toEqual([]);
  expect(m.delete('k', 'a')).toBe(false);
});

test('keys are independent; deleting from a key that has another value empties nothing', () => {
  const m = new SetMap();
  m.add('k', 'a');
  m.add('j', 'a');
  expect(m.delete('k', 'b')).toBe(false);
  expect(m.delete('k', 'a')).toBe(true);
  expect(m.first('j')).toBe('a');
});
