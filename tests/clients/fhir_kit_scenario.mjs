// The end-to-end scenario with fhir-kit-client (npm), on Node's fetch.
//
// Run by tests/tests/clients.rs inside the test cgroup: it connects to the FHIR server's own
// address (the kernel redirects it into the fhirwall sidecar) and trusts the agent's node CA
// through NODE_EXTRA_CA_CERTS. One JSON line per action on stdout. The client is imported from
// the directory npm installed it into (FHIR_KIT_MODULES).
//
// usage: node fhir_kit_scenario.mjs BASE_URL

import path from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.FHIR_KIT_MODULES;
const { Client } = await import(
  pathToFileURL(path.join(modules, 'fhir-kit-client', 'dist', 'index.js')).href
);

const emit = (action, fields) => console.log(JSON.stringify({ action, ...fields }));

const lab = (patientId, code, value) => ({
  resourceType: 'Observation',
  status: 'final',
  category: [{ coding: [{
    system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
  code: { coding: [{ system: 'http://loinc.org', code }] },
  subject: { reference: `Patient/${patientId}` },
  valueQuantity: { value, unit: 'mg/dL' },
});

const client = new Client({ baseUrl: process.argv[2] });

const created = await client.create({
  resourceType: 'Patient',
  body: { resourceType: 'Patient', name: [{ family: 'E2E-fhir-kit', given: ['Js'] }] },
});
const id = created.id;
emit('create', { ok: Boolean(id), id });

const read = await client.read({ resourceType: 'Patient', id });
emit('read', { ok: read.name[0].family === 'E2E-fhir-kit' });

const updated = await client.update({
  resourceType: 'Patient', id, body: { ...read, birthDate: '1983-02-17' },
});
emit('update', { ok: updated.meta.versionId === '2' });

const response = await client.transaction({
  body: {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { resource: lab(id, '2345-7', 88), request: { method: 'POST', url: 'Observation' } },
      { resource: lab(id, '2524-7', 2.1), request: { method: 'POST', url: 'Observation' } },
    ],
  },
});
const statuses = (response.entry || []).map((e) => e.response.status);
emit('transaction', { ok: statuses.length === 2 && statuses.every((s) => s.startsWith('201')) });

const found = await client.search({
  resourceType: 'Observation',
  searchParams: { subject: `Patient/${id}`, _include: 'Observation:subject:Patient' },
});
const modes = (found.entry || []).map((e) => e.search.mode);
emit('search', {
  ok: modes.filter((m) => m === 'match').length === 2 && modes.filter((m) => m === 'include').length === 1,
  modes,
});

try {
  await client.search({ resourceType: 'Condition', searchParams: { subject: `Patient/${id}` } });
  emit('denied', { ok: false, status: 200 });
} catch (error) {
  const outcome = error.response?.data ?? {};
  const issue = (outcome.issue || [{}])[0];
  emit('denied', {
    ok: outcome.resourceType === 'OperationOutcome',
    status: error.response?.status,
    code: issue.code,
    diagnostics: issue.diagnostics,
  });
}
