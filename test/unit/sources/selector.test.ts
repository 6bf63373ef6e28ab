/**
 * Client-side label and field selectors against the Kubernetes grammar: the parse and match cases
 * of k8s.io/apimachinery pkg/labels/selector_test.go (TestSelectorParse, TestSelectorMatches,
 * TestSetSelectorParser) and pkg/fields/selector.go, and what a source's selection can be left by.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CrbridgeError, ErrorCode } from '../../../src/errors.ts';
import type { KubeObject } from '../../../src/events/delta.ts';
import {
  compileSelection,
  type LabelRequirement,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
} from '../../../src/sources/kubernetes/selector.ts';

const req = (key: string, operator: LabelRequirement['operator'], values: string[] = []): LabelRequirement => ({
  key,
  operator,
  values,
});
const byKey = (r: LabelRequirement[]) => [...r].sort((a, b) => a.key.localeCompare(b.key));
const matches = (sel: string, labels: Record<string, string>) => matchesLabels(parseLabelSelector(sel), labels);

describe('label selector grammar', () => {
  it('parses what labels.Parse accepts, into the same requirements', () => {
    const cases: [string, LabelRequirement[]][] = [
      ['', []],
      ['  ', []],
      ['x=a,y=b,z=c', [req('x', '=', ['a']), req('y', '=', ['b']), req('z', '=', ['c'])]],
      ['x!=a,y=b', [req('x', '!=', ['a']), req('y', '=', ['b'])]],
      ['x=', [req('x', '=', [''])]],
      ['x= ', [req('x', '=', [''])]],
      ['x=,z= ', [req('x', '=', ['']), req('z', '=', [''])]],
      ['x==a', [req('x', '==', ['a'])]],
      ['!x', [req('x', '!')]],
      ['x>1', [req('x', '>', ['1'])]],
      ['x>1,z<5', [req('x', '>', ['1']), req('z', '<', ['5'])]],
      ['\rx', [req('x', 'exists')]],
      ['a ', [req('a', 'exists')]],
      ['this-is-a-dns.domain.com/key-with-dash', [req('this-is-a-dns.domain.com/key-with-dash', 'exists')]],
      [
        'this-is-another-dns.domain.com/key-with-dash in (so,what)',
        [req('this-is-another-dns.domain.com/key-with-dash', 'in', ['so', 'what'])],
      ],
      [
        '0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)',
        [req('0.1.2.domain/99', 'notin', ['10.10.100.1', 'tick.tack.clock'])],
      ],
      ['foo  in\t (abc)', [req('foo', 'in', ['abc'])]],
      ['x notin\n (abc)', [req('x', 'notin', ['abc'])]],
      ['x in (abc,)', [req('x', 'in', ['', 'abc'])]],
      ['x in (abc,abc)', [req('x', 'in', ['abc'])]],
      ['x in ()', [req('x', 'in', [''])]],
      ['x in (a,,,,,,)', [req('x', 'in', ['', 'a'])]],
      ['x notin ( )', [req('x', 'notin', [''])]],
      ['x notin (, a)', [req('x', 'notin', ['', 'a'])]],
      [
        'x notin (abc,,def),bar,z in (),w',
        [req('bar', 'exists'), req('w', 'exists'), req('x', 'notin', ['', 'abc', 'def']), req('z', 'in', [''])],
      ],
      ['a in (x,y,notin, z,in)', [req('a', 'in', ['in', 'notin', 'x', 'y', 'z'])]],
      ['notin=in', [req('notin', '=', ['in'])]],
      ['tier=prod', [req('tier', '=', ['prod'])]],
    ];
    for (const [s, want] of cases) assert.deepEqual(byKey(parseLabelSelector(s)), byKey(want), JSON.stringify(s));
  });

  it('refuses what labels.Parse refuses, with a config error naming the selector', () => {
    const bad = [
      'x=a||y=b',
      'x==a==b',
      '!x=a',
      'x<a',
      'x>-1', // not a label value
      'x>99999999999999999999', // not a 64-bit integer
      'x,,y',
      ',x,y',
      'x nott in (y)',
      'a in (xyz),',
      'a in (xyz)b notin ()',
      'a in (xyz abc)',
      'a notin(',
      'a (',
      '(',
      '-x', // a key starts with an alphanumeric
      'x=-a', // so does a value
      `x=${'v'.repeat(64)}`, // values have at most 63 characters
      `${'k'.repeat(64)}`,
      'Example.com/x', // a prefix is a lower-case DNS subdomain
      'a/b/c',
      '/x',
      'x in (a b)',
    ];
    for (const s of bad) {
      assert.throws(
        () => parseLabelSelector(s),
        (e: unknown) =>
          e instanceof CrbridgeError &&
          e.code === ErrorCode.ConfigInvalid &&
          e.message.startsWith(`labelSelector "${s}": `),
        JSON.stringify(s),
      );
    }
  });

  it('matches as Requirement.Matches does', () => {
    const yes: [string, Record<string, string>][] = [
      ['', { x: 'y' }],
      ['x=y', { x: 'y' }],
      ['x==y', { x: 'y' }],
      ['x=y,z=w', { x: 'y', z: 'w' }],
      ['x!=y,z!=w', { x: 'z', z: 'a' }],
      ['x!=y', {}], // != holds for a missing label
      ['notin=in', { notin: 'in' }],
      ['x', { x: 'z' }],
      ['x', { x: '' }],
      ['!x', { y: 'z' }],
      ['x>1', { x: '2' }],
      ['x<1', { x: '0' }],
      ['x<1', { x: '-5' }],
      ['x in (a,b)', { x: 'b' }],
      ['x in (a,)', { x: '' }],
      ['x notin (a,b)', { x: 'c' }],
      ['x notin (a,b)', {}], // notin holds for a missing label
      ['x=', { x: '' }],
      ['foo=bar,baz=blah', { foo: 'bar', baz: 'blah' }],
    ];
    const no: [string, Record<string, string>][] = [
      ['x=z', {}],
      ['x=y', { x: 'z' }],
      ['x=y,z=w', { x: 'w', z: 'w' }],
      ['x!=y,z!=w', { x: 'z', z: 'w' }],
      ['x', { y: 'z' }],
      ['!x', { x: 'z' }],
      ['x>1', { x: '0' }],
      ['x>1', { x: '1' }],
      ['x<1', { x: '2' }],
      ['x>1', {}],
      ['x>1', { x: 'a' }], // not an integer: neither > nor <
      ['x<1', { x: 'a' }],
      ['x in (a,b)', { x: 'c' }],
      ['x in (a,b)', {}],
      ['x notin (a,b)', { x: 'a' }],
      ['x=', {}],
      ['foo=bar,foobar=bar,baz=blah', { foo: 'bar', baz: 'blah' }],
      ['toString', {}], // own labels only, not Object.prototype
    ];
    for (const [s, l] of yes) assert.equal(matches(s, l), true, `${s} ~ ${JSON.stringify(l)}`);
    for (const [s, l] of no) assert.equal(matches(s, l), false, `${s} !~ ${JSON.stringify(l)}`);
    assert.equal(matchesLabels(parseLabelSelector('!x'), undefined), true, 'no labels at all');
  });
});

describe('field selector grammar', () => {
  it('splits terms at unescaped commas and each term at its first operator, as fields.ParseSelector', () => {
    assert.deepEqual(parseFieldSelector(''), []);
    assert.deepEqual(parseFieldSelector('metadata.name=b0'), [{ field: 'metadata.name', operator: '=', value: 'b0' }]);
    assert.deepEqual(parseFieldSelector('metadata.name==b0,metadata.namespace!=kube-system'), [
      { field: 'metadata.name', operator: '=', value: 'b0' },
      { field: 'metadata.namespace', operator: '!=', value: 'kube-system' },
    ]);
    assert.deepEqual(parseFieldSelector('spec.x=a\\,b\\=c\\\\'), [
      { field: 'spec.x', operator: '=', value: 'a,b=c\\' },
    ]);
    assert.deepEqual(parseFieldSelector('a=,,b!='), [
      { field: 'a', operator: '=', value: '' },
      { field: 'b', operator: '!=', value: '' },
    ]);
    for (const s of ['metadata.name', 'a=b=c', 'a=b\\', 'a=b\\x'])
      assert.throws(
        () => parseFieldSelector(s),
        (e: unknown) => e instanceof CrbridgeError && e.message.startsWith(`fieldSelector "${s}": `),
        s,
      );
  });
});

describe('a source selection', () => {
  const obj = (labels?: Record<string, string>, name = 'b0', namespace: string | null = 'a'): KubeObject => ({
    metadata: {
      name,
      ...(namespace !== null && { namespace }),
      uid: 'u',
      resourceVersion: '1',
      ...(labels && { labels }),
    },
  });

  it('can be left with a label selector or a field selector on a field that may change, never otherwise', () => {
    assert.equal(compileSelection().canLeave, false);
    assert.equal(compileSelection('', '').canLeave, false);
    assert.equal(compileSelection('', 'metadata.name=b0,metadata.namespace!=x').canLeave, false);
    assert.equal(compileSelection('tier=prod').canLeave, true);
    assert.equal(compileSelection('!gone').canLeave, true);
    assert.equal(compileSelection('', 'spec.color=blue').canLeave, true);
    assert.equal(compileSelection('', 'metadata.name=b0,status.phase=Running').canLeave, true);
  });

  it('tells whether an object is inside when every requirement can be read here', () => {
    const s = compileSelection('tier=prod', 'metadata.namespace=a');
    assert.equal(s.matches(obj({ tier: 'prod' })), true);
    assert.equal(s.matches(obj({ tier: 'dev' })), false);
    assert.equal(s.matches(obj()), false);
    assert.equal(s.matches(obj({ tier: 'prod' }, 'b0', 'b')), false);
    assert.equal(compileSelection('', 'metadata.namespace=').matches(obj({}, 'c', null)), true, 'cluster-scoped');
    assert.equal(compileSelection('', 'metadata.name!=b0').matches(obj()), false);
    const other = compileSelection('tier=prod', 'spec.color=blue');
    assert.equal(other.matches(obj({ tier: 'prod' })), undefined, 'spec.color is not read here');
    assert.equal(other.matches(obj({ tier: 'dev' })), false, 'but the label already excludes it');
  });

  it('refuses a malformed selector', () => {
    assert.throws(() => compileSelection('tier in prod'), /labelSelector "tier in prod": found 'prod', expected: '\('/);
    assert.throws(() => compileSelection('', 'name'), /fieldSelector "name": can't understand 'name'/);
  });
});
